//! JSON ↔ msgpack for JSON-RPC: params into an args array, replies
//! back into JSON (see the rules in the parent module's docs).

use bytes::{Bytes, BytesMut};
use serde_json::{Map, Number, Value as Json};

use super::CallError;
use crate::proto::msgpack::{Reader, Value as Pack};
use crate::proto::{MessageError, RawArgs};

/// JSON params as a msgpack args array.
pub(crate) fn to_args(args: &[Json]) -> Result<RawArgs, CallError> {
    let mut buf = BytesMut::new();
    crate::proto::msgpack::put_array_len(&mut buf, args.len());
    for arg in args {
        to_pack(arg).encode(&mut buf);
    }
    RawArgs::new(buf.freeze()).map_err(|e| CallError::InvalidParams(e.to_string()))
}

/// A JSON value as msgpack.
pub fn to_pack(value: &Json) -> Pack {
    match value {
        Json::Null => Pack::Nil,
        Json::Bool(b) => Pack::Bool(*b),
        Json::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Pack::Int(i128::from(u)),
            (_, Some(i)) => Pack::Int(i128::from(i)),
            _ => Pack::Float(n.as_f64().unwrap_or(0.0)),
        },
        Json::String(s) => Pack::Bytes(Bytes::copy_from_slice(s.as_bytes())),
        Json::Array(items) => Pack::Array(items.iter().map(to_pack).collect()),
        Json::Object(map) => Pack::Map(
            map.iter()
                .map(|(k, v)| {
                    (
                        Pack::Bytes(Bytes::copy_from_slice(k.as_bytes())),
                        to_pack(v),
                    )
                })
                .collect(),
        ),
    }
}

/// A msgpack value as JSON (see the module docs).
pub fn to_json(value: &Pack) -> Json {
    match value {
        Pack::Nil | Pack::Ext(_) => Json::Null,
        Pack::Bool(b) => Json::Bool(*b),
        Pack::Int(i) => match (u64::try_from(*i), i64::try_from(*i)) {
            (Ok(u), _) => Json::Number(u.into()),
            (_, Ok(s)) => Json::Number(s.into()),
            _ => Json::Null,
        },
        Pack::Float(f) => Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Pack::Bytes(b) => match std::str::from_utf8(b) {
            Ok(s) => Json::String(s.to_owned()),
            Err(_) => Json::Array(b.iter().map(|byte| Json::Number((*byte).into())).collect()),
        },
        Pack::Array(items) => Json::Array(items.iter().map(to_json).collect()),
        Pack::Map(pairs) => {
            let mut object = Map::with_capacity(pairs.len());
            for (k, v) in pairs {
                let key = match to_json(k) {
                    Json::String(s) => s,
                    other => key_text(&other),
                };
                object.insert(key, to_json(v));
            }
            Json::Object(object)
        }
    }
}

/// The most bytes of JSON text a map key that is not a string becomes.
/// Keys nested in keys escape their quotes again at every level, so without
/// a cap 134 bytes of msgpack (thirty maps as keys of maps) ask for 2 GB.
const MAX_KEY_TEXT: usize = 64;

/// A key that is not a string as its JSON text, cut to [`MAX_KEY_TEXT`]
/// bytes on a character boundary.
fn key_text(key: &Json) -> String {
    let mut text = key.to_string();
    if text.len() > MAX_KEY_TEXT {
        let mut end = MAX_KEY_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// A reply's args array as JSON.
pub(super) fn to_json_args(args: &Bytes) -> Result<Json, MessageError> {
    Ok(to_json(&Reader::new(args).read_value()?))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::Call;
    use super::*;

    #[test]
    fn json_and_msgpack_convert_both_ways() {
        let value = json!([null, true, 1, -2, 1.5, "s", [1], {"k": "v"}]);
        assert_eq!(to_json(&to_pack(&value)), value);
        assert_eq!(
            to_json(&Pack::Bytes(Bytes::from_static(b"\xff\x00"))),
            json!([255, 0])
        );
        let map = Pack::Map(vec![(Pack::Int(0), Pack::Nil)]);
        assert_eq!(to_json(&map), json!({"0": null}));
    }

    #[test]
    fn keys_nested_in_keys_stay_small() {
        // Found by the `jsonrpc_convert` fuzz target: each map used as a
        // key doubles the escaping of the key inside it.
        let mut value = Pack::Bytes(Bytes::from_static(b"\"k\""));
        for _ in 0..20 {
            value = Pack::Map(vec![(value, Pack::Nil)]);
        }
        let text = to_json(&value).to_string();
        assert!(text.len() < 4 * MAX_KEY_TEXT, "{} bytes", text.len());
        // Short non-string keys are still their JSON text.
        let map = Pack::Map(vec![(Pack::Array(vec![Pack::Int(1)]), Pack::Bool(true))]);
        assert_eq!(to_json(&map), json!({"[1]": true}));
    }

    #[test]
    fn calls_parse_by_the_spec() {
        let (id, call) = Call::parse(json!({"jsonrpc": "2.0", "method": "a.b", "id": 1})).unwrap();
        assert_eq!(id, Some(json!(1)));
        assert!(call.args.is_empty());
        let (id, _) = Call::parse(json!({"jsonrpc": "2.0", "method": "a.b"})).unwrap();
        assert_eq!(id, None);
        let (id, e) = Call::parse(json!({"jsonrpc": "1.0", "method": "a.b", "id": 7})).unwrap_err();
        assert_eq!((id, e.code()), (Some(json!(7)), -32600));
        let (_, e) = Call::parse(json!({"jsonrpc": "2.0", "method": "a.b", "params": 3, "id": 1}))
            .unwrap_err();
        assert_eq!(e.code(), -32602);
        let (_, call) = Call::parse(json!({"jsonrpc": "2.0", "method": "e.enqueue",
            "params": {"args": ["ping"], "chunks": [{"write": ["x"]}, {"close": []}]}}))
        .unwrap();
        assert_eq!(call.chunks.len(), 2);
    }
}
