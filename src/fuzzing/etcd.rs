//! The locator cluster's etcd JSON and base64.

use super::*;

/// Feeds `data[1..]` to the etcd client's JSON reading as etcd's gateway
/// would send it, whole and in two pieces (cut where `data[0]` says), then
/// reads every object as a watch batch and as a range reply; and checks
/// base64 both ways. Nothing panics; a stream of objects splits the same
/// wherever the bytes are cut; every event and key-value decoded is the
/// base64 of what etcd sent; base64 round-trips.
pub fn etcd_json(data: &[u8]) {
    use crate::locator::cluster::etcd::{
        WatchEvent, b64, range_reply, take_objects, unb64, watch_batch,
    };

    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let mut whole = BytesMut::from(stream);
    let mut objects = Vec::new();
    let parsed = take_objects(&mut whole, &mut objects);
    let at = usize::from(cut).min(stream.len());
    let mut split = BytesMut::from(&stream[..at]);
    let mut pieces = Vec::new();
    let mut split_ok = take_objects(&mut split, &mut pieces).is_ok();
    split.extend_from_slice(&stream[at..]);
    split_ok &= take_objects(&mut split, &mut pieces).is_ok();
    // Bare numbers may end at a cut ("12" then "3"); etcd sends objects.
    let all_objects = |v: &Vec<serde_json::Value>| v.iter().all(serde_json::Value::is_object);
    if parsed.is_ok() && all_objects(&objects) && all_objects(&pieces) {
        assert!(split_ok, "a cut made an object stream fail");
        assert_eq!(pieces, objects, "a cut changed the objects");
        // Whitespace before an incomplete value may or may not be taken.
        assert_eq!(
            split.trim_ascii_start(),
            whole.trim_ascii_start(),
            "a cut changed what is left over"
        );
    }
    for object in &objects {
        if let Ok((_, events)) = watch_batch(object) {
            let sent = object["result"]["events"].as_array().map_or(0, Vec::len);
            assert_eq!(events.len(), sent, "one event per event sent");
            for (event, raw) in events
                .iter()
                .zip(object["result"]["events"].as_array().into_iter().flatten())
            {
                let key = match event {
                    WatchEvent::Put(kv) => {
                        let value = raw["kv"]["value"].as_str().unwrap_or("");
                        assert_eq!(Some(kv.value.clone()), unb64(value));
                        &kv.key
                    }
                    WatchEvent::Delete(key) => {
                        assert_eq!(raw["type"].as_str(), Some("DELETE"));
                        key
                    }
                };
                assert_eq!(
                    raw["kv"]["key"].as_str().and_then(unb64),
                    Some(key.as_bytes().to_vec())
                );
            }
        }
        if let Ok((_, kvs)) = range_reply(object) {
            let sent = object
                .get("kvs")
                .and_then(|k| k.as_array())
                .map_or(0, Vec::len);
            assert_eq!(kvs.len(), sent, "one key-value per kv sent");
            for kv in kvs {
                assert_eq!(
                    unb64(&b64(kv.key.as_bytes())),
                    Some(kv.key.clone().into_bytes())
                );
            }
        }
    }
    assert_eq!(
        unb64(&b64(stream)),
        Some(stream.to_vec()),
        "base64 round-trips"
    );
    assert_eq!(b64(stream).len(), stream.len().div_ceil(3) * 4);
    let text = String::from_utf8_lossy(stream);
    if let Some(bytes) = unb64(&text) {
        assert_eq!(bytes.len(), text.trim_end_matches('=').len() * 6 / 8);
        assert_eq!(unb64(&b64(&bytes)), Some(bytes));
    }
}
