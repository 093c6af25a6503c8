//! Targets of the sans-IO codec: frames, split streams, the header table.

use super::*;

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

pub(super) fn check_reencodes(frame: &Frame) {
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

pub(super) fn check_typed_views(args: &Bytes) {
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

pub(super) fn decode_all<'a>(
    pieces: impl Iterator<Item = &'a [u8]>,
) -> (Vec<Frame>, Option<String>) {
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

pub(super) fn model_insert(model: &mut Vec<(Vec<u8>, Vec<u8>)>, name: Vec<u8>, value: Vec<u8>) {
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
