//! A small etcd v3 client over etcd's JSON gateway (grpc-gateway, `/v3/...`):
//! owns the HTTP/1.1 requests for kv put / range / delete, leases and the
//! watch stream, and the base64 of keys and values. It knows nothing of the
//! locator; [`super::store`] does.
//!
//! Every unary call opens a fresh connection to the first endpoint that
//! answers (etcd is local or on a LAN, the calls are rare: a publish, a
//! weight change, a keepalive every TTL/3), so there is no pool to manage.
//! The watch keeps its own connection open and streams JSON objects. No
//! task is spawned: whoever reads a response drives its connection.

use std::pin::Pin;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpStream;

/// How long a unary call may take, connect included.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// The largest watch message buffered while incomplete; etcd's own limit on
/// a request is 1.5 MiB, and a watch response batches a few of them.
const MAX_WATCH_MESSAGE: usize = 16 << 20;

/// The largest unary response read.
const MAX_RESPONSE: usize = 64 << 20;

/// Why an etcd call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EtcdError {
    /// No endpoint could be reached, or the connection broke.
    #[error("etcd unreachable: {0}")]
    Unreachable(String),
    /// etcd answered with an error status or a body we do not understand.
    #[error("etcd refused the call: {0}")]
    Refused(String),
}

/// One key and its value, decoded from base64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value bytes.
    pub value: Vec<u8>,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was created or changed.
    Put(KeyValue),
    /// The key was deleted (or its lease ended).
    Delete(String),
}

/// An etcd client over its JSON gateway.
#[derive(Debug, Clone)]
pub struct EtcdClient {
    /// `host:port` authorities, tried in order.
    endpoints: Vec<String>,
}

impl EtcdClient {
    /// A client for `urls` (`http://host:port`; https is not supported).
    pub fn new(urls: &[String]) -> Result<Self, String> {
        let endpoints = urls
            .iter()
            .map(|url| authority(url))
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err("at least one etcd endpoint is needed".into());
        }
        Ok(Self { endpoints })
    }

    /// Writes `key = value`, attached to `lease` when not 0.
    pub async fn put(&self, key: &str, value: &[u8], lease: i64) -> Result<(), EtcdError> {
        let mut body = json!({"key": b64(key.as_bytes()), "value": b64(value)});
        if lease != 0 {
            body["lease"] = json!(lease.to_string());
        }
        self.call("/v3/kv/put", &body).await.map(drop)
    }

    /// Deletes `key`; whether it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, EtcdError> {
        let reply = self
            .call("/v3/kv/deleterange", &json!({"key": b64(key.as_bytes())}))
            .await?;
        Ok(int(&reply["deleted"]).unwrap_or(0) > 0)
    }

    /// Every key under `prefix` and the store's revision of that read.
    pub async fn range_prefix(&self, prefix: &str) -> Result<(i64, Vec<KeyValue>), EtcdError> {
        let body = json!({
            "key": b64(prefix.as_bytes()),
            "range_end": b64(&prefix_end(prefix.as_bytes())),
        });
        let reply = self.call("/v3/kv/range", &body).await?;
        range_reply(&reply)
    }

    /// Grants a lease of `ttl` (rounded up to whole seconds); its id.
    pub async fn grant(&self, ttl: Duration) -> Result<i64, EtcdError> {
        let seconds = ttl.as_millis().div_ceil(1000).max(1);
        let reply = self
            .call("/v3/lease/grant", &json!({"TTL": seconds.to_string()}))
            .await?;
        match int(&reply["ID"]) {
            Some(id) if id != 0 => Ok(id),
            _ => Err(EtcdError::Refused(format!("lease grant: {reply}"))),
        }
    }

    /// Renews a lease once; an error if it has already expired.
    pub async fn keep_alive(&self, lease: i64) -> Result<(), EtcdError> {
        let reply = self
            .call("/v3/lease/keepalive", &json!({"ID": lease.to_string()}))
            .await?;
        // A streaming endpoint: the reply is `{"result": {...}}`, and a
        // lease that is gone answers with TTL 0 (omitted as a default).
        let ttl = int(&reply["result"]["TTL"]).unwrap_or(0);
        if ttl <= 0 {
            return Err(EtcdError::Refused(format!("lease {lease:x} has expired")));
        }
        Ok(())
    }

    /// Revokes a lease: every key attached to it is deleted.
    pub async fn revoke(&self, lease: i64) -> Result<(), EtcdError> {
        self.call("/v3/lease/revoke", &json!({"ID": lease.to_string()}))
            .await
            .map(drop)
    }

    /// Whether etcd answers a read (used to wait for readiness).
    pub async fn is_healthy(&self) -> bool {
        self.range_prefix("/health-probe").await.is_ok()
    }

    /// Opens a watch on every key under `prefix`, from `start_revision`.
    pub async fn watch(&self, prefix: &str, start_revision: i64) -> Result<Watch, EtcdError> {
        let body = json!({"create_request": {
            "key": b64(prefix.as_bytes()),
            "range_end": b64(&prefix_end(prefix.as_bytes())),
            "start_revision": start_revision.to_string(),
        }});
        // The stream's head comes with the "created" answer, at once.
        tokio::time::timeout(CALL_TIMEOUT, self.request("/v3/watch", &body))
            .await
            .map_err(|_| EtcdError::Unreachable("/v3/watch: no answer within 3 s".into()))?
    }

    async fn call(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, EtcdError> {
        let read = async {
            // Streaming endpoints (keepalive) send one JSON object and may
            // keep the stream open: read until one complete object.
            let mut stream = self.request(path, body).await?;
            stream.next_object(MAX_RESPONSE).await
        };
        tokio::time::timeout(CALL_TIMEOUT, read)
            .await
            .map_err(|_| EtcdError::Unreachable(format!("{path}: no answer within 3 s")))?
    }

    /// Posts `body` to the first endpoint that accepts a connection and
    /// returns the response stream once the status is 200. The connection
    /// is driven by the returned [`Watch`] (no task of its own) and closes
    /// when it is dropped.
    async fn request(&self, path: &str, body: &serde_json::Value) -> Result<Watch, EtcdError> {
        let payload = Bytes::from(body.to_string());
        let mut last = String::new();
        for endpoint in &self.endpoints {
            let connect = tokio::time::timeout(CALL_TIMEOUT, TcpStream::connect(endpoint));
            let stream = match connect.await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    last = format!("{endpoint}: {e}");
                    continue;
                }
                Err(_) => {
                    last = format!("{endpoint}: connect timed out");
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| EtcdError::Unreachable(format!("{endpoint}: {e}")))?;
            let mut connection = Box::pin(connection);
            let request = Request::post(path)
                .header(hyper::header::HOST, endpoint.as_str())
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Full::new(payload.clone()))
                .map_err(|e| EtcdError::Refused(e.to_string()))?;
            let sent = tokio::select! {
                sent = sender.send_request(request) => sent.map_err(|e| e.to_string()),
                ended = &mut connection => Err(match ended {
                    Ok(()) => "connection closed before the response".to_owned(),
                    Err(e) => e.to_string(),
                }),
            };
            let response = match sent {
                Ok(response) => response,
                Err(e) => {
                    last = format!("{endpoint}: {e}");
                    continue;
                }
            };
            let status = response.status();
            let mut stream = Watch {
                body: response.into_body(),
                connection: Some(connection),
                buf: BytesMut::new(),
                pending: Vec::new(),
            };
            if !status.is_success() {
                let text = match stream.read_to_end(4096).await {
                    Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                    Err(e) => e.to_string(),
                };
                return Err(EtcdError::Refused(format!("{path}: {status}: {text}")));
            }
            return Ok(stream);
        }
        Err(EtcdError::Unreachable(last))
    }
}

/// A watch stream: decoded events, batch by batch.
#[derive(Debug)]
pub struct Watch {
    body: Incoming,
    /// The HTTP/1.1 connection, polled beside the body; `None` once it
    /// has ended (what it had received is still in the body).
    connection: Option<Pin<Box<Connection>>>,
    buf: BytesMut,
    pending: Vec<serde_json::Value>,
}

impl Watch {
    /// The next batch of events and the store revision they bring the view
    /// to (the first answer, "created", is an empty batch). An error when the stream ends or etcd cancels the watch
    /// (for instance because the start revision was compacted).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: bytes read are kept in the buffer.
    pub async fn next(&mut self) -> Result<(i64, Vec<WatchEvent>), EtcdError> {
        let object = self.next_object(MAX_WATCH_MESSAGE).await?;
        watch_batch(&object)
    }

    /// Reads until one whole JSON object is buffered; objects may be split
    /// across chunks or share one.
    async fn next_object(&mut self, limit: usize) -> Result<serde_json::Value, EtcdError> {
        loop {
            if !self.pending.is_empty() {
                let object = self.pending.remove(0);
                if let Some(error) = object.get("error") {
                    return Err(EtcdError::Refused(error.to_string()));
                }
                return Ok(object);
            }
            take_objects(&mut self.buf, &mut self.pending)?;
            if !self.pending.is_empty() {
                continue;
            }
            if self.buf.len() > limit {
                return Err(EtcdError::Refused(format!(
                    "a message from etcd is larger than {limit} bytes"
                )));
            }
            match self.next_frame().await? {
                Some(data) => self.buf.extend_from_slice(&data),
                None => return Err(EtcdError::Unreachable("etcd closed the stream".into())),
            }
        }
    }

    /// The next data of the body, driving the connection meanwhile;
    /// `None` at the end of the body.
    async fn next_frame(&mut self) -> Result<Option<Bytes>, EtcdError> {
        loop {
            let frame = match self.connection.as_mut() {
                Some(connection) => tokio::select! {
                    biased;
                    frame = self.body.frame() => Some(frame),
                    ended = connection => {
                        if let Err(e) = ended {
                            return Err(EtcdError::Unreachable(e.to_string()));
                        }
                        None
                    }
                },
                None => Some(self.body.frame().await),
            };
            match frame {
                // The connection ended cleanly: read what the body holds.
                None => self.connection = None,
                Some(None) => return Ok(None),
                Some(Some(Err(e))) => return Err(EtcdError::Unreachable(e.to_string())),
                Some(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }

    /// Reads the body to its end, at most `limit` bytes kept.
    async fn read_to_end(&mut self, limit: usize) -> Result<Vec<u8>, EtcdError> {
        let mut out = Vec::new();
        while let Some(data) = self.next_frame().await? {
            let room = limit.saturating_sub(out.len());
            out.extend_from_slice(&data[..data.len().min(room)]);
        }
        Ok(out)
    }
}

/// One HTTP/1.1 client connection to etcd.
type Connection = hyper::client::conn::http1::Connection<TokioIo<TcpStream>, Full<Bytes>>;

#[derive(Debug, Deserialize)]
struct RawKv {
    key: String,
    #[serde(default)]
    value: String,
}

impl RawKv {
    fn decode(self) -> Result<KeyValue, EtcdError> {
        let bad = |what: &str| EtcdError::Refused(format!("{what} is not base64"));
        let key = unb64(&self.key).ok_or_else(|| bad("a key"))?;
        let key = String::from_utf8(key).map_err(|_| bad("a key (UTF-8)"))?;
        let value = unb64(&self.value).ok_or_else(|| bad("a value"))?;
        Ok(KeyValue { key, value })
    }
}

#[derive(Debug, Deserialize)]
struct RawEvent {
    #[serde(rename = "type")]
    kind: Option<String>,
    kv: RawKv,
}

/// Moves every whole JSON value at the front of `buf` to `pending`; an
/// incomplete one stays in `buf` for more bytes.
pub(crate) fn take_objects(
    buf: &mut BytesMut,
    pending: &mut Vec<serde_json::Value>,
) -> Result<(), EtcdError> {
    let mut stream = serde_json::Deserializer::from_slice(buf).into_iter::<serde_json::Value>();
    let mut consumed = 0;
    loop {
        match stream.next() {
            Some(Ok(value)) => {
                consumed = stream.byte_offset();
                pending.push(value);
            }
            Some(Err(e)) if e.is_eof() => break,
            Some(Err(e)) => {
                return Err(EtcdError::Refused(format!("bad JSON from etcd: {e}")));
            }
            None => {
                consumed = stream.byte_offset();
                break;
            }
        }
    }
    buf.advance(consumed);
    Ok(())
}

/// A range reply's revision and key-values.
pub(crate) fn range_reply(reply: &serde_json::Value) -> Result<(i64, Vec<KeyValue>), EtcdError> {
    let revision = int(&reply["header"]["revision"])
        .ok_or_else(|| EtcdError::Refused("a range reply without a revision".into()))?;
    let kvs = match reply.get("kvs") {
        None => Vec::new(),
        Some(kvs) => serde_json::from_value::<Vec<RawKv>>(kvs.clone())
            .map_err(|e| EtcdError::Refused(format!("range reply: {e}")))?
            .into_iter()
            .map(RawKv::decode)
            .collect::<Result<_, _>>()?,
    };
    Ok((revision, kvs))
}

/// A watch message's revision and events (see [`Watch::next`]).
pub(crate) fn watch_batch(object: &serde_json::Value) -> Result<(i64, Vec<WatchEvent>), EtcdError> {
    let result = &object["result"];
    let revision = int(&result["header"]["revision"]).unwrap_or(0);
    if result["canceled"].as_bool() == Some(true) {
        return Err(EtcdError::Refused(format!(
            "watch canceled: {}",
            result["cancel_reason"]
                .as_str()
                .unwrap_or("no reason given")
        )));
    }
    let Some(events) = result.get("events") else {
        return Ok((revision, Vec::new()));
    };
    let events: Vec<RawEvent> = serde_json::from_value(events.clone())
        .map_err(|e| EtcdError::Refused(format!("watch event: {e}")))?;
    let events = events
        .into_iter()
        .map(|event| {
            let kv = event.kv.decode()?;
            Ok(match event.kind.as_deref() {
                Some("DELETE") => WatchEvent::Delete(kv.key),
                _ => WatchEvent::Put(kv),
            })
        })
        .collect::<Result<_, EtcdError>>()?;
    Ok((revision, events))
}

/// An int64 as grpc-gateway writes it: a string, or a number.
fn int(value: &serde_json::Value) -> Option<i64> {
    match value {
        serde_json::Value::String(s) => s.parse().ok(),
        serde_json::Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// `http://host:port` → `host:port`.
fn authority(url: &str) -> Result<String, String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "`{url}`: only http:// etcd endpoints are supported"
        ));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("`{url}` has no host"))?;
    Ok(match authority.port_u16() {
        Some(_) => authority.to_string(),
        None => format!("{}:2379", authority.host()),
    })
}

/// The end of the range of every key starting with `prefix`: the prefix
/// with its last byte below 0xff incremented (etcd's `GetPrefixRangeEnd`).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff (or empty): the whole keyspace, `\0`.
    vec![0]
}

// Base64 (RFC 4648, standard alphabet, padded) for the JSON gateway's
// bytes fields. Forty lines here rather than a dependency: this is its
// only use, and the encoding is fixed.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Encodes bytes as padded standard base64.
pub fn b64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes padded (or unpadded) standard base64; `None` if it is not.
pub fn unb64(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut n = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|a| *a == c)? as u32;
        n = n << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((n >> bits & 0xff) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for (raw, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("/rpcgate/groups/canary", "L3JwY2dhdGUvZ3JvdXBzL2NhbmFyeQ=="),
        ] {
            assert_eq!(b64(raw.as_bytes()), encoded);
            assert_eq!(unb64(encoded).unwrap(), raw.as_bytes());
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(unb64(&b64(&all)).unwrap(), all);
        assert_eq!(unb64("not base64!"), None);
    }

    #[test]
    fn prefix_ends_and_authorities() {
        assert_eq!(prefix_end(b"/a"), b"/b");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b""), b"\0");
        assert_eq!(
            authority("http://127.0.0.1:2379").unwrap(),
            "127.0.0.1:2379"
        );
        assert_eq!(authority("http://etcd").unwrap(), "etcd:2379");
        assert!(authority("https://etcd:2379").is_err());
        assert!(authority("etcd:2379").is_err());
    }
}
