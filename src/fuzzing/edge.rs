//! Targets of the gateway's edge: the PROXY header, JSON-RPC, routing,
//! WebSocket packing.

use super::*;

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
pub(super) fn json_depth(json: &serde_json::Value) -> usize {
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
pub(super) fn has_dot_segment(path: &str) -> bool {
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
