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
        }
    }
}
