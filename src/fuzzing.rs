//! Fuzzing entry points: owns one function per target in `fuzz/`. Each
//! target there is a one-line call into this module, and
//! `tests/fuzz_corpus.rs` runs the same functions over the committed corpus
//! in the normal `cargo test`, so stable CI covers them.
//!
//! The functions take arbitrary bytes and panic only when an invariant of
//! the library is broken; that panic is what a fuzzer looks for. They are
//! not meant for production use.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::mux::{ChannelTable, OpenAction, ReceiveAction, SendAction};
use crate::proto::header::{
    DYNAMIC_TABLE_CAPACITY, ENTRY_OVERHEAD, STATIC_TABLE_LEN, static_entry,
};
use crate::proto::msgpack;
use crate::proto::msgpack::Reader;
use crate::proto::{
    Args, Frame, FrameCodec, Graph, Header, HeaderTable, Headers, Message, Protocol, RawArgs,
    RemoteError, app, http, locator,
};

/// The frame limit the targets use: small, so the fuzzer reaches it.
const FUZZ_MAX_FRAME: usize = 1 << 16;

/// Decodes `data` as a stream of frames. Every frame that decodes must
/// re-encode (when its headers are valid to send) to bytes that decode to
/// the same frame, and no typed view of its args may panic.
pub fn frame_decode(data: &[u8]) {
    let mut codec = FrameCodec::new(FUZZ_MAX_FRAME);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = codec.decode(&mut buf) {
        check_typed_views(&frame.args);
        check_reencodes(&frame);
    }
}

fn check_reencodes(frame: &Frame) {
    let Ok(args) = RawArgs::new(frame.args.clone()) else {
        panic!("a decoded frame's args must be exactly one array");
    };
    let message = Message {
        ty: frame.ty,
        args: Args::Raw(args),
        headers: frame.headers.clone(),
    };
    let mut codec = FrameCodec::new(usize::MAX);
    let mut out = BytesMut::new();
    if codec.encode((frame.channel, message), &mut out).is_err() {
        // Invalid reserved headers from the peer are never re-sent.
        assert!(
            frame.headers.validate().is_err(),
            "valid frames must encode"
        );
        return;
    }
    let again = match FrameCodec::new(usize::MAX).decode(&mut out) {
        Ok(Some(again)) => again,
        other => panic!("re-encoded frame did not decode: {other:?}"),
    };
    assert!(out.is_empty(), "re-encoding produced exactly one frame");
    assert_eq!(&again, frame, "re-encoded frame decodes to the same frame");
}

fn check_typed_views(args: &Bytes) {
    let _ = RemoteError::decode_args(args);
    let _ = http::HttpRequest::decode(args);
    let _ = http::ResponseMeta::decode(args);
    let _ = app::Enqueue::decode_args(args);
    let _ = app::InfoReply::decode_args(args);
    let _ = app::ControlChunk::decode_args(args);
    let _ = locator::ResolveRequest::decode_args(args);
    let _ = locator::ResolveReply::decode_args(args);
    let _ = locator::PublishRequest::decode_args(args);
    let _ = locator::RoutingUpdate::decode_args(args);
    let _ = locator::RefreshRequest::decode_args(args);
    let _ = locator::ClusterReply::decode_args(args);
    let _ = locator::ConnectUpdate::decode_args(args);
    let _ = Graph::decode_bytes(args);
    let _ = Reader::new(args).read_value();
}

/// Decodes `data[1..]` twice: whole, and cut into pieces whose sizes come
/// from `data[0]`. Both must give the same frames and the same outcome.
pub fn split_stream(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let whole = decode_all(std::iter::once(stream));
    let mut pieces = Vec::new();
    let mut rest = stream;
    let mut step = usize::from(seed % 31) + 1;
    while !rest.is_empty() {
        let n = step.min(rest.len());
        pieces.push(&rest[..n]);
        rest = &rest[n..];
        step = (step * 7 + usize::from(seed)) % 97 + 1;
    }
    let split = decode_all(pieces.into_iter());
    assert_eq!(whole, split, "split points must not change what decodes");
}

fn decode_all<'a>(pieces: impl Iterator<Item = &'a [u8]>) -> (Vec<Frame>, Option<String>) {
    let mut codec = FrameCodec::new(FUZZ_MAX_FRAME);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => return (frames, Some(e.to_string())),
            }
        }
    }
    (frames, None)
}

/// Drives a [`HeaderTable`] with operations read from `data`, against a
/// plain model of §2.1: newest first, size = name + value + 32, evict the
/// oldest, an oversized entry empties the table.
pub fn header_table(data: &[u8]) {
    let mut table = HeaderTable::new();
    let mut model: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut ops = data;
    while let Some((&op, rest)) = ops.split_first() {
        ops = rest;
        match op % 3 {
            0 => {
                // Insert: name length, value length scaled to reach eviction.
                let (Some(&n), Some(&v)) = (ops.first(), ops.get(1)) else {
                    return;
                };
                ops = &ops[2..];
                let name = vec![b'n'.wrapping_add(op); usize::from(n % 40)];
                let value = vec![op; usize::from(v) * 24];
                table.insert(&Header {
                    name: Bytes::from(name.clone()),
                    value: Bytes::from(value.clone()),
                });
                model_insert(&mut model, name, value);
            }
            1 => {
                // Encode a header list in the old compressed forms, decode it
                // against the table, and check the result against the model.
                let count = ops.first().map_or(0, |b| usize::from(b % 4) + 1);
                ops = ops.get(1..).unwrap_or(&[]);
                let mut wire = BytesMut::new();
                let mut expected = Vec::new();
                let mut stores = Vec::new();
                msgpack::put_array_len(&mut wire, count);
                for _ in 0..count {
                    let (Some(&kind), Some(&x)) = (ops.first(), ops.get(1)) else {
                        return;
                    };
                    ops = &ops[2..];
                    let index = u64::from(x) % (STATIC_TABLE_LEN + model.len() as u64 + 2);
                    let lookup = |i: u64| -> Option<(Vec<u8>, Vec<u8>)> {
                        if i < STATIC_TABLE_LEN {
                            static_entry(i).map(|h| (h.name.to_vec(), h.value.to_vec()))
                        } else {
                            model.get((i - STATIC_TABLE_LEN) as usize).cloned()
                        }
                    };
                    match kind % 3 {
                        0 => {
                            // Bare index, as a fixed-width cf uint64.
                            wire.extend_from_slice(&[0xcf]);
                            wire.extend_from_slice(&index.to_be_bytes());
                            expected.push(lookup(index));
                        }
                        1 => {
                            // [store, name_index, value]
                            let store = kind & 0x80 != 0;
                            let value = vec![kind; usize::from(x) * 17];
                            msgpack::put_array_len(&mut wire, 3);
                            msgpack::put_bool(&mut wire, store);
                            msgpack::put_uint(&mut wire, index);
                            msgpack::put_str(&mut wire, &value);
                            let entry = lookup(index).map(|(name, _)| (name, value));
                            if store {
                                stores.push(entry.clone());
                            }
                            expected.push(entry);
                        }
                        _ => {
                            // [store, name, value]
                            let store = kind & 0x80 != 0;
                            let name = vec![b'h'; usize::from(x % 50)];
                            let value = vec![kind; usize::from(x) * 9];
                            msgpack::put_array_len(&mut wire, 3);
                            msgpack::put_bool(&mut wire, store);
                            msgpack::put_str(&mut wire, &name);
                            msgpack::put_str(&mut wire, &value);
                            if store {
                                stores.push(Some((name.clone(), value.clone())));
                            }
                            expected.push(Some((name, value)));
                        }
                    }
                    // Later entries see earlier stores, as on the wire.
                    if let Some(Some((name, value))) = stores.pop() {
                        model_insert(&mut model, name, value);
                    }
                }
                let wire = wire.freeze();
                let decoded = Headers::decode(&mut Reader::new(&wire), &mut table);
                if expected.iter().all(Option::is_some) {
                    let Ok(headers) = decoded else {
                        panic!("a valid header list failed to decode: {decoded:?}");
                    };
                    let got: Vec<_> = headers
                        .iter()
                        .map(|h| Some((h.name.to_vec(), h.value.to_vec())))
                        .collect();
                    assert_eq!(got, expected, "decoded headers match the model");
                } else {
                    assert!(decoded.is_err(), "a bad index must be an error");
                    // The table may hold stores made before the bad entry;
                    // resynchronise the model from it and go on.
                    model = (0..table.len() as u64)
                        .filter_map(|k| table.get(STATIC_TABLE_LEN + k))
                        .map(|h| (h.name.to_vec(), h.value.to_vec()))
                        .collect();
                }
            }
            _ => {}
        }
        let size: usize = model
            .iter()
            .map(|(n, v)| n.len() + v.len() + ENTRY_OVERHEAD)
            .sum();
        assert!(
            table.size() <= DYNAMIC_TABLE_CAPACITY,
            "table over capacity"
        );
        assert_eq!(table.size(), size, "size accounting");
        assert_eq!(table.len(), model.len(), "entry count");
        for (k, (name, value)) in model.iter().enumerate() {
            let Some(entry) = table.get(STATIC_TABLE_LEN + k as u64) else {
                panic!("dynamic entry {k} missing");
            };
            assert_eq!((&entry.name[..], &entry.value[..]), (&name[..], &value[..]));
        }
        assert!(table.get(STATIC_TABLE_LEN + model.len() as u64).is_none());
    }
}

fn model_insert(model: &mut Vec<(Vec<u8>, Vec<u8>)>, name: Vec<u8>, value: Vec<u8>) {
    let size = name.len() + value.len() + ENTRY_OVERHEAD;
    if size > DYNAMIC_TABLE_CAPACITY {
        model.clear();
        return;
    }
    let used = |m: &Vec<(Vec<u8>, Vec<u8>)>| -> usize {
        m.iter()
            .map(|(n, v)| n.len() + v.len() + ENTRY_OVERHEAD)
            .sum()
    };
    while used(model) + size > DYNAMIC_TABLE_CAPACITY {
        model.pop();
    }
    model.insert(0, (name, value));
}

/// What the model knows about one channel id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModelChannel {
    /// Cancelled before `open` saw it.
    Precancelled,
    /// Opened; whether our side is terminal, and whether it ever will be
    /// written again.
    Open { tx_done: bool, rx_done: bool },
    /// Gone from the table.
    Gone,
}

/// The model's side of `finish_rx`: an open channel's peer side is done.
fn mark_rx_done(model: &mut std::collections::BTreeMap<u64, ModelChannel>, id: u64) {
    if let Some(ModelChannel::Open { tx_done, .. }) = model.get(&id).copied() {
        model.insert(
            id,
            ModelChannel::Open {
                tx_done,
                rx_done: true,
            },
        );
    }
}

/// Drives a [`ChannelTable`] with arbitrary open / send / cancel / reply /
/// close operations read from `data`, checking the mux invariants: ids open
/// strictly increasing; nothing is written after a terminal message or a
/// cancel; a channel cancelled before its opening frame is never written;
/// entries leave the table once both sides are done.
pub fn mux_ops(data: &[u8]) {
    let mut table: ChannelTable<()> = ChannelTable::new();
    let mut model: std::collections::BTreeMap<u64, ModelChannel> = Default::default();
    let mut highest_opened = 0u64;
    let mut live = 0usize;
    let mut removed = 0usize;
    for pair in data.chunks(2) {
        let op = pair[0];
        let arg = u64::from(pair.get(1).copied().unwrap_or(0));
        // Ids cluster near the frontier so operations hit real channels.
        let id = (highest_opened + arg % 8).saturating_sub(3).max(1);
        match op % 6 {
            0 => {
                let tx = [Protocol::Streaming, Protocol::Terminal, Protocol::Discard]
                    [(arg % 3) as usize];
                let action = table.open(id, tx, Protocol::Streaming, ());
                match action {
                    OpenAction::Write => {
                        assert!(id > highest_opened, "ids open strictly increasing");
                        assert_ne!(model.get(&id), Some(&ModelChannel::Precancelled));
                        model.insert(
                            id,
                            ModelChannel::Open {
                                tx_done: tx.is_terminal(),
                                rx_done: false,
                            },
                        );
                        live += 1;
                    }
                    OpenAction::Skip => {
                        assert_eq!(model.get(&id), Some(&ModelChannel::Precancelled));
                        model.insert(id, ModelChannel::Gone);
                    }
                    OpenAction::Reject => assert!(id <= highest_opened),
                }
                highest_opened = highest_opened.max(id);
            }
            1 => {
                if let SendAction::Write { terminal } = table.send(id, arg % 4) {
                    let Some(ModelChannel::Open { tx_done, rx_done }) = model.get(&id).copied()
                    else {
                        panic!(
                            "wrote on channel {id} that is not open: {:?}",
                            model.get(&id)
                        );
                    };
                    assert!(!tx_done, "wrote on channel {id} after its terminal message");
                    model.insert(
                        id,
                        ModelChannel::Open {
                            tx_done: terminal,
                            rx_done,
                        },
                    );
                }
            }
            2 => {
                let sent = table.cancel(id);
                match model.get(&id).copied() {
                    Some(ModelChannel::Open { tx_done, rx_done }) => {
                        assert_eq!(
                            sent.is_some(),
                            !tx_done,
                            "cancel writes iff our side was open"
                        );
                        model.insert(
                            id,
                            ModelChannel::Open {
                                tx_done: true,
                                rx_done,
                            },
                        );
                    }
                    None if id > highest_opened => {
                        assert!(sent.is_none());
                        model.insert(id, ModelChannel::Precancelled);
                    }
                    _ => assert!(
                        sent.is_none(),
                        "cancel of a finished channel writes nothing"
                    ),
                }
            }
            3 => {
                let action = table.receive(id, arg % 4);
                if let ReceiveAction::Deliver { last } = action {
                    let Some(ModelChannel::Open { rx_done, .. }) = model.get(&id).copied() else {
                        panic!("delivered to channel {id} that is not open");
                    };
                    assert!(!rx_done, "delivered after the peer's terminal message");
                    if last {
                        table.finish_rx(id);
                        mark_rx_done(&mut model, id);
                    }
                }
            }
            4 => {
                table.finish_rx(id);
                mark_rx_done(&mut model, id);
            }
            _ => table.mark_written(id, crate::mux::Delivery::Partial),
        }
        // Entries leave exactly when both sides are done.
        for (id, state) in model.iter_mut() {
            if let ModelChannel::Open {
                tx_done: true,
                rx_done: true,
            } = *state
            {
                *state = ModelChannel::Gone;
                live -= 1;
                assert!(
                    !table.contains(*id),
                    "finished channel {id} still in the table"
                );
            }
        }
        removed += table.take_removed();
        assert_eq!(table.len(), live, "table size matches the model");
        let opened = model
            .values()
            .filter(|s| !matches!(s, ModelChannel::Precancelled))
            .count();
        assert!(removed <= opened);
    }
    let drained = table.drain().count();
    assert_eq!(drained, live);
}

/// Parses `data` as the start of a PROXY protocol connection. A header
/// that parses must lie within `data`, parse the same from exactly its own
/// bytes, and be incomplete (never refused) from any shorter prefix.
pub fn proxy_header(data: &[u8]) {
    let Ok(Some(header)) = crate::proxy_protocol::parse(data) else {
        return;
    };
    assert!(header.len <= data.len(), "a header longer than its input");
    let own = &data[..header.len];
    assert!(
        matches!(crate::proxy_protocol::parse(own), Ok(Some(h)) if h == header),
        "a header parses differently from its own bytes"
    );
    for end in 1..header.len {
        assert!(
            matches!(crate::proxy_protocol::parse(&own[..end]), Ok(None)),
            "a prefix of a valid header was refused"
        );
    }
}

/// Converts `data` between JSON and msgpack as the JSON-RPC endpoint does,
/// and parses it as a JSON-RPC request.
///
/// - As msgpack: any value that decodes converts to JSON without a panic;
///   that JSON converts to msgpack and back unchanged (the JSON side is the
///   lossless one), and the value re-encodes to bytes that decode to the
///   same bytes again.
/// - As JSON: the value converts to msgpack, goes over the wire (encode,
///   decode) and comes back as the same JSON, unless it nests deeper than
///   msgpack's [`msgpack::MAX_DEPTH`], which is refused, never cut.
/// - As a JSON-RPC request (one call or a batch): a call that parses had
///   `"jsonrpc": "2.0"`, a string `method` and the same `id`; its args and
///   chunks are the params given, in order; its args pack as one array.
pub fn jsonrpc_convert(data: &[u8]) {
    use crate::dispatch::jsonrpc::{Call, to_args, to_json, to_pack};
    use serde_json::Value as Json;

    if let Ok(value) = Reader::new(&Bytes::copy_from_slice(data)).read_value() {
        let json = to_json(&value);
        assert_eq!(
            to_json(&to_pack(&json)),
            json,
            "msgpack → JSON is a fixed point"
        );
        let Ok(text) = serde_json::to_vec(&json) else {
            panic!("converted JSON does not serialise: {json:?}");
        };
        assert!(
            serde_json::from_slice::<Json>(&text).is_ok(),
            "converted JSON reparses"
        );
        let mut once = BytesMut::new();
        value.encode(&mut once);
        let once = once.freeze();
        let Ok(again) = Reader::new(&once).read_value() else {
            panic!("a decoded msgpack value did not re-decode: {value:?}");
        };
        let mut twice = BytesMut::new();
        again.encode(&mut twice);
        assert_eq!(once, twice.freeze(), "msgpack re-encoding is stable");
    }
    let Ok(json) = serde_json::from_slice::<Json>(data) else {
        return;
    };
    let packed = to_pack(&json);
    assert_eq!(to_json(&packed), json, "JSON → msgpack → JSON");
    let mut wire = BytesMut::new();
    packed.encode(&mut wire);
    match Reader::new(&wire.freeze()).read_value() {
        Ok(back) => assert_eq!(to_json(&back), json, "JSON → msgpack wire → JSON"),
        Err(msgpack::MsgpackError::TooDeep) => {
            assert!(
                json_depth(&json) >= msgpack::MAX_DEPTH,
                "refused as too deep"
            );
        }
        Err(e) => panic!("packed JSON did not decode: {e}"),
    }
    let calls = match &json {
        Json::Array(calls) => calls.clone(),
        call => vec![call.clone()],
    };
    for call in calls {
        let Ok((id, parsed)) = Call::parse(call.clone()) else {
            continue;
        };
        assert_eq!(call.get("jsonrpc"), Some(&Json::from("2.0")));
        assert_eq!(call.get("method"), Some(&Json::from(parsed.method.clone())));
        assert_eq!(
            id.as_ref(),
            call.get("id"),
            "the id answered is the id sent"
        );
        let (args, chunks) = match call.get("params") {
            None => (Vec::new(), Vec::new()),
            Some(Json::Array(args)) => (args.clone(), Vec::new()),
            Some(params) => (
                params
                    .get("args")
                    .and_then(Json::as_array)
                    .cloned()
                    .unwrap_or_default(),
                params
                    .get("chunks")
                    .and_then(Json::as_array)
                    .cloned()
                    .unwrap_or_default(),
            ),
        };
        assert_eq!(parsed.args, args, "args are the params given");
        assert_eq!(parsed.chunks.len(), chunks.len(), "one chunk per entry");
        for ((name, chunk_args), given) in parsed.chunks.iter().zip(&chunks) {
            assert_eq!(given.get(name).and_then(Json::as_array), Some(chunk_args));
        }
        if let Ok(raw) = to_args(&parsed.args) {
            let Ok(Json::Array(back)) = Reader::new(raw.as_bytes())
                .read_value()
                .map(|v| to_json(&v))
            else {
                panic!("packed args are not an array");
            };
            assert_eq!(back, parsed.args, "args survive packing");
        }
    }
}

/// How deeply `json` nests (a scalar: 0).
fn json_depth(json: &serde_json::Value) -> usize {
    match json {
        serde_json::Value::Array(items) => 1 + items.iter().map(json_depth).max().unwrap_or(0),
        serde_json::Value::Object(map) => 1 + map.values().map(json_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Routes a request made from `data` (a flags byte, then lines: the path
/// and query, the host, and up to six configured routes as `host prefix`)
/// and checks: the result is deterministic; a routed request's path and the
/// uri its app sees have no `.` or `..` segment (in any spelling); the
/// configured route chosen is the most specific (a model: host and prefix
/// beat either, a longer prefix beats a shorter, a host beats none, the
/// first among equals); the header and path rules give back the path they
/// were read from and reach only exposed services; an encoded slash is
/// never decoded into a name or the uri.
pub fn route(data: &[u8]) {
    use crate::config::{RouteConfig, RoutingConfig};
    use crate::route::{RouteError, route as route_request};
    use hyper::header::{HeaderMap, HeaderValue};

    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let mut lines = text.split('\n');
    let path_and_query = lines.next().unwrap_or("");
    let host = lines.next().filter(|h| !h.is_empty());
    // As the config file makes them: a prefix starts with `/`, a host is
    // lower case, a route has one or both.
    let routes: Vec<RouteConfig> = lines
        .take(6)
        .enumerate()
        .filter_map(|(i, line)| {
            let (host, prefix) = line.split_once(' ').unwrap_or((line, ""));
            let host = (!host.is_empty()).then(|| host.to_ascii_lowercase());
            let prefix = prefix.starts_with('/').then(|| prefix.to_owned());
            (host.is_some() || prefix.is_some()).then(|| RouteConfig {
                host,
                prefix,
                service: format!("cfg/{i}"),
                event: "http".to_owned(),
                strip_prefix: flags & (0x20 << (i % 3)) != 0,
            })
        })
        .collect();
    #[allow(clippy::needless_update)] // keys added later keep their defaults
    let rules = RoutingConfig {
        by_header: flags & 1 != 0,
        by_path: flags & 2 != 0,
        expose: (flags & 4 != 0).then(|| ["echo".to_owned(), "hsvc".to_owned()].into()),
        // Shares its bit with every third route's strip_prefix.
        allow_encoded_slash: flags & 0x80 != 0,
        ..RoutingConfig::default()
    };
    let mut headers = HeaderMap::new();
    if flags & 8 != 0 {
        headers.insert("x-cocaine-service", HeaderValue::from_static("hsvc"));
    }
    if flags & 16 != 0 {
        headers.insert("x-cocaine-event", HeaderValue::from_static("hev"));
    }
    let got = route_request(path_and_query, host, &headers, &routes, &rules);
    assert_eq!(
        got,
        route_request(path_and_query, host, &headers, &routes, &rules),
        "routing is deterministic"
    );
    let path = path_and_query
        .split_once('?')
        .map_or(path_and_query, |(path, _)| path);
    if has_dot_segment(path) {
        assert_eq!(got, Err(RouteError::DotSegment), "a dot segment is refused");
        return;
    }
    let lower = path.to_ascii_lowercase();
    if !rules.allow_encoded_slash && (lower.contains("%2f") || lower.contains("%5c")) {
        assert_eq!(
            got,
            Err(RouteError::EncodedSlash),
            "an encoded slash is refused"
        );
        return;
    }
    if let Ok(target) = &got {
        let uri_path = target.uri.split_once('?').map_or(&*target.uri, |(p, _)| p);
        assert!(
            !has_dot_segment(uri_path),
            "the app sees a dot segment: {target:?}"
        );
        // As hyper gives it (`*` for `OPTIONS *` goes by the headers).
        assert!(
            target.uri.starts_with('/') || !path_and_query.starts_with('/'),
            "a uri starts with `/`: {target:?}"
        );
        let encoded = |s: &str| {
            s.to_ascii_lowercase().matches("%2f").count()
                + s.to_ascii_lowercase().matches("%5c").count()
        };
        assert!(encoded(&target.uri) <= encoded(path_and_query));
    }
    // The model of configured routes: sort by specificity, then file order.
    let host_name = host.map(|h| h.split(':').next().unwrap_or(h).to_ascii_lowercase());
    let mut matching: Vec<(usize, &RouteConfig)> = routes
        .iter()
        .enumerate()
        .filter(|(_, r)| r.host.is_none() || r.host == host_name)
        .filter(|(_, r)| {
            r.prefix
                .as_ref()
                .is_none_or(|p| path_and_query.starts_with(p.as_str()))
        })
        .collect();
    matching.sort_by_key(|(i, r)| {
        let both = r.host.is_some() && r.prefix.is_some();
        let len = r.prefix.as_ref().map_or(0, String::len);
        (std::cmp::Reverse((both, len, r.host.is_some())), *i)
    });
    if let Some((i, best)) = matching.first() {
        let uri = match &best.prefix {
            Some(prefix) if best.strip_prefix => {
                let rest = &path_and_query[prefix.len()..];
                if rest.starts_with('/') {
                    rest.to_owned()
                } else {
                    format!("/{rest}")
                }
            }
            _ => path_and_query.to_owned(),
        };
        let uri_path = uri.split_once('?').map_or(&*uri, |(p, _)| p);
        if has_dot_segment(uri_path) {
            assert_eq!(
                got,
                Err(RouteError::DotSegment),
                "a stripped uri with a dot segment"
            );
        } else {
            let Ok(target) = &got else {
                panic!("configured route {i} matches, got {got:?}");
            };
            assert_eq!(target.service, best.service, "the most specific route wins");
            assert_eq!(target.uri, uri);
        }
        return;
    }
    let Ok(target) = got else {
        return;
    };
    assert!(
        !target.service.starts_with("cfg/"),
        "no configured route matched"
    );
    if let Some(expose) = &rules.expose {
        assert!(expose.contains(&target.service), "only exposed services");
    }
    if rules.by_header && flags & 24 == 24 {
        assert_eq!((&*target.service, &*target.event), ("hsvc", "hev"));
        assert_eq!(
            target.uri, path_and_query,
            "the header rule passes the path on"
        );
    } else {
        // The path rule: `/<service>/<event><rest>`, names without `/`.
        assert!(rules.by_path);
        assert!(!target.service.contains('/') && !target.event.contains(['/', '?']));
        assert!(!target.service.is_empty() && !target.event.is_empty());
        let head = format!("/{}/{}", target.service, target.event);
        assert!(
            target.uri.starts_with('/'),
            "the path rule's uri: {target:?}"
        );
        assert!(
            format!("{head}{}", target.uri) == path_and_query
                || format!("{head}{}", &target.uri[1..]) == path_and_query,
            "the path rule's parts make up the path: {target:?}"
        );
    }
}

/// Whether a path has a `.` or `..` segment, any dot written `.`, `%2e` or
/// `%2E`: the model, written apart from the router's own check.
fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|segment| {
        let plain = segment.replace("%2e", ".").replace("%2E", ".");
        plain == "." || plain == ".."
    })
}

/// Packs and unpacks WebSocket messages as chunks (`data[0]` picks the
/// kind, the rest is the payload) and decodes `data` itself as a chunk: a
/// packed message unpacks to itself (a text one when its payload is
/// UTF-8); a chunk decodes only with opcode 0x01 or 0x02, to exactly its
/// own payload; a close reason is cut to a prefix of at most 123 bytes.
pub fn websocket_pack(data: &[u8]) {
    use crate::proto::websocket::{BadChunk, Kind, MAX_CLOSE_REASON, close_reason, decode, encode};

    let Some((&first, payload)) = data.split_first() else {
        assert_eq!(decode(&Bytes::new()), Err(BadChunk::Empty));
        return;
    };
    let kind = if first & 1 == 0 {
        Kind::Binary
    } else {
        Kind::Text
    };
    let chunk = encode(kind, payload);
    assert_eq!(chunk.len(), payload.len() + 1);
    let utf8 = std::str::from_utf8(payload).is_ok();
    match decode(&chunk) {
        Ok((k, p)) => {
            assert_eq!(k, kind);
            assert_eq!(&p[..], payload, "a packed message unpacks to itself");
            assert!(kind == Kind::Binary || utf8);
        }
        Err(e) => assert!(kind == Kind::Text && !utf8 && e == BadChunk::NotUtf8, "{e}"),
    }
    let whole = Bytes::copy_from_slice(data);
    match decode(&whole) {
        Ok((k, p)) => {
            assert_eq!(first, k.opcode(), "only a data opcode decodes");
            assert_eq!(&p[..], payload);
            assert_eq!(encode(k, &p), whole, "a decoded chunk re-packs to itself");
        }
        Err(BadChunk::Opcode(op)) => assert!(op == first && first != 1 && first != 2),
        Err(BadChunk::NotUtf8) => assert!(first == 1 && !utf8),
        Err(BadChunk::Empty) => panic!("a non-empty chunk is not empty"),
    }
    let reason = String::from_utf8_lossy(data);
    let cut = close_reason(&reason);
    assert!(reason.starts_with(cut) && cut.len() <= MAX_CLOSE_REASON);
    if reason.len() <= MAX_CLOSE_REASON {
        assert_eq!(cut, reason);
    } else {
        let next = reason[cut.len()..].chars().next().map_or(0, char::len_utf8);
        assert!(
            cut.len() + next > MAX_CLOSE_REASON,
            "cut no shorter than needed"
        );
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_accept_trivial_inputs() {
        for data in [&[][..], &[0], &[0x94, 1, 0, 0x90, 0x90], &[0xff; 64]] {
            frame_decode(data);
            split_stream(data);
            header_table(data);
            mux_ops(data);
            jsonrpc_convert(data);
            route(data);
            websocket_pack(data);
            etcd_json(data);
        }
    }
}
