//! The JSON gateway's encoding: streamed objects, range replies, watch
//! batches, key ranges and base64 (keys and values are base64 there).

use super::*;

#[derive(Debug, Deserialize)]
pub(super) struct RawKv {
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
pub(super) struct RawEvent {
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
        // A refused token or right comes as a reason in words
        // ("rpc error: code = Unauthenticated desc = ...").
        let reason = result["cancel_reason"]
            .as_str()
            .unwrap_or("no reason given");
        return Err(classify_text(&format!("watch canceled: {reason}"), None));
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
pub(super) fn int(value: &serde_json::Value) -> Option<i64> {
    match value {
        serde_json::Value::String(s) => s.parse().ok(),
        serde_json::Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// The end of the range of every key starting with `prefix`: the prefix
/// with its last byte below 0xff incremented (etcd's `GetPrefixRangeEnd`).
pub(super) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
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

pub(super) const ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

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
